"""The pipeline's MLflow run: where the store is, the run's life, and the one logger.

One pipeline run is one MLflow run, whichever caller runs the steps: the flow (one
process) or `dvc repro` (one process per stage). `pipeline_run` is the only place that
starts, resumes and ends it:
- the first step that actually executes starts it and logs what the run needs before any
  step (all params, dataset/task/git tags, the dataset YAML) plus the `logged.json` of each
  earlier step found on disk (those steps were skipped as unchanged, by DVC or the flow's
  cache, but their outputs are this run's inputs);
- later steps, in this process or another, resume it: its id is kept in the state file
  `cfg.dirs.state/mlflow_run.json` while it is RUNNING;
- an exception in any step ends it FAILED (so the next pipeline run starts afresh); the
  last step ends it FINISHED. A flow that starts while a run is still RUNNING (its pipeline
  was killed) marks it KILLED first (`close_stale`).
`PipelineRun.log` writes a step's `Logged` record: the one logger of the project.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunesmith.config import DATASETS_DIR, Config
from tunesmith.logged import Logged, finite

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

RUN_FILE = "mlflow_run.json"
_MAX_PARAM = 6000  # MLflow's limit on a param value
_MAX_TAG = 5000


def tracking_uri(cfg: Config) -> str:
    """MLFLOW_TRACKING_URI if set, else cfg.tracking.uri (a relative sqlite path is made
    absolute against the project root, so every step and `mlflow ui` see one store)."""
    if env := os.environ.get("MLFLOW_TRACKING_URI"):
        return env
    uri = cfg.tracking.uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str((cfg.root / uri[len(prefix):]).resolve())
    return uri


def configure(cfg: Config) -> MlflowClient:
    """Point the fluent API at this project's tracking store and return a client for it."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(cfg)
    # Every step opens the pipeline's run; MLflow's INFO lines (system-metrics thread
    # start/stop, DB setup: 4+ per step) would bury the one-line error contract. MLflow
    # reads MLFLOW_LOGGING_LEVEL only when first imported, so the level is set here.
    level = os.environ.get("MLFLOW_LOGGING_LEVEL", "WARNING").upper()
    logging.getLogger("mlflow").setLevel(level)
    # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; left there, it would override
    # the next dataset's `tracking.uri` in this process. Keep only what the user set.
    user_set = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if user_set is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    return MlflowClient(uri, uri)


def experiment_id(cfg: Config, client: MlflowClient) -> str:
    """The dataset's experiment (named after it), created with artifacts under the project."""
    exp = client.get_experiment_by_name(cfg.name)
    if exp is not None:
        return exp.experiment_id
    location = None
    uri = tracking_uri(cfg)
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        # A remote server decides its own artifact store; a local one keeps them in the project.
        location = (cfg.root / cfg.tracking.artifact_location / cfg.name).resolve().as_uri()
    return client.create_experiment(cfg.name, artifact_location=location)


# ------------------------------------------------------------------- the state file


def _state_path(cfg: Config) -> Path:
    return cfg.dirs.state / RUN_FILE


def recorded_run(cfg: Config) -> dict[str, Any]:
    """The state file's content ({} without one); read without importing MLflow."""
    try:
        return json.loads(_state_path(cfg).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _record(cfg: Config, **fields: Any) -> None:
    path = _state_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**recorded_run(cfg), **fields}), encoding="utf-8")


def current_run_id(cfg: Config) -> str | None:
    """The recorded pipeline run if it is still RUNNING in this store, else None."""
    from mlflow.exceptions import MlflowException

    saved = recorded_run(cfg)
    if not saved.get("run_id") or saved.get("tracking_uri") != tracking_uri(cfg):
        return None
    try:
        run = configure(cfg).get_run(saved["run_id"])
    except MlflowException:
        return None
    return run.info.run_id if run.info.status == "RUNNING" else None


# ----------------------------------------------------------------------- the run's life


class PipelineRun:
    """The open pipeline run of one step: its id, and `log` for Logged records."""

    def __init__(self, cfg: Config, client: MlflowClient, run_id: str) -> None:
        self.cfg, self.client, self.run_id = cfg, client, run_id

    def log(self, record: Logged) -> None:
        """Write one step's record to the run (see tunesmith.logged.Logged)."""
        import mlflow
        from mlflow.entities import Metric

        root = self.cfg.root
        have = self.client.get_run(self.run_id).data.params
        params = {k: str(v)[:_MAX_PARAM] for k, v in record.params.items() if k not in have}
        items = list(params.items())
        for start in range(0, len(items), 100):  # log_params sends at most 100 per batch
            mlflow.log_params(dict(items[start:start + 100]))
        if metrics := finite(record.metrics):
            mlflow.log_metrics(metrics)
        if record.tags:
            mlflow.set_tags({k[:250]: str(v)[:_MAX_TAG] for k, v in record.tags.items()})
        batch = [Metric(key, float(value), 0, int(step)) for key, value, step in record.series
                 if value == value]
        for start in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[start:start + 1000])
        for item in record.inputs:
            self._log_input(item)
        for name, text in record.texts:
            mlflow.log_text(text, name)
        for name, path in record.tables:
            if (root / path).is_file():
                import pandas as pd

                mlflow.log_table(pd.read_json(root / path, lines=True), artifact_file=name)
        for path, folder in record.artifacts:
            local = root / path
            if local.is_dir():
                mlflow.log_artifacts(str(local), folder)
            elif local.is_file():
                mlflow.log_artifact(str(local), folder)

    def _log_input(self, item: dict[str, Any]) -> None:
        import mlflow
        import pandas as pd

        path = self.cfg.root / item["path"]
        if not path.is_file():
            return
        frame = pd.read_parquet(path)
        with warnings.catch_warnings():
            # A local path matches two equivalent source types; MLflow warns and picks one.
            # Logging the schema then hints that integer columns (an image's width and
            # height) cannot hold missing values: a clean split has none.
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(
                frame, source=str(path), name=item["name"],
                # MLflow caps dataset digests at 36 characters; ours are sha256 hex.
                digest=(item.get("digest") or "")[:32] or None,
                targets=item.get("targets") if item.get("targets") in frame else None,
            )
            mlflow.log_input(dataset, context=item.get("context"))


@contextmanager
def pipeline_run(cfg: Config, step: str, closes: bool = False) -> Iterator[PipelineRun]:
    """Start or resume the pipeline run around `step` (see the module docstring).

    The run is the active MLflow run inside (register logs its model into it); system
    metrics are sampled while a step runs unless MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING says no.
    """
    import mlflow

    client = configure(cfg)
    run_id = current_run_id(cfg)
    system = None if "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING" in os.environ else True
    run = mlflow.start_run(
        run_id=run_id, experiment_id=None if run_id else experiment_id(cfg, client),
        run_name=None if run_id else f"{cfg.name}-pipeline", log_system_metrics=system,
    )
    opened = PipelineRun(cfg, client, run.info.run_id)
    _record(cfg, run_id=opened.run_id, experiment_id=run.info.experiment_id,
            tracking_uri=tracking_uri(cfg), status="RUNNING")
    try:
        if run_id is None:
            opened.log(run_context(cfg))
            for record in earlier_records(cfg, step):
                opened.log(record)
        client.set_tag(opened.run_id, f"step.{step}", "started")
        if closes:
            opened.log(lineage_record(cfg))
        yield opened
    except BaseException:
        try:
            client.set_tag(opened.run_id, f"step.{step}", "failed")
            _end(cfg, "FAILED")
        except Exception:  # noqa: BLE001 - the store itself failed: report the first error
            _record(cfg, status="FAILED")
        raise
    client.set_tag(opened.run_id, f"step.{step}", "done")
    _end(cfg, "FINISHED" if closes else "RUNNING")


def _end(cfg: Config, status: str) -> None:
    """End the active run with `status` (RUNNING: just detach; the next step resumes it)."""
    import mlflow

    mlflow.end_run(status=status)
    _record(cfg, status=status)


def finish(cfg: Config, status: str) -> str | None:
    """End the recorded pipeline run from outside a step (a stopped flow); returns its id."""
    run_id = current_run_id(cfg)
    if run_id is None:
        return None
    import mlflow

    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        mlflow.end_run(status=status)
    else:
        configure(cfg).set_terminated(run_id, status=status)
    _record(cfg, status=status)
    return run_id


# Where `mlflow ui` serves a local store (its default address; README's "mlflow ui" line).
LOCAL_UI = "http://127.0.0.1:5000"


def run_link(cfg: Config, run_id: str) -> str:
    """The run's page in the MLflow UI: on the tracking server itself, or for a local store
    where `mlflow ui` serves it by default. The experiment comes from the state file when it
    holds this run (no call to a server that may be gone by now)."""
    uri = tracking_uri(cfg)
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else LOCAL_UI
    saved = recorded_run(cfg)
    experiment = saved.get("experiment_id") if saved.get("run_id") == run_id else None
    if experiment is None:
        experiment = configure(cfg).get_run(run_id).info.experiment_id
    return f"{base}/#/experiments/{experiment}/runs/{run_id}"


def tag_run(cfg: Config, run_id: str, tags: dict[str, str]) -> None:
    """Set `tags` on a run, open or ended (the flow tags its pipeline run from outside)."""
    client = configure(cfg)
    for key, value in tags.items():
        client.set_tag(run_id, key, value[:_MAX_TAG])


def close_stale(cfg: Config) -> None:
    """A run still RUNNING when a flow starts belongs to a pipeline that died (killed, power
    loss): mark it KILLED, so this flow run starts its own. Reads the state file first, so
    a run with nothing to close (the usual case) does not import MLflow."""
    if recorded_run(cfg).get("status") == "RUNNING":
        finish(cfg, "KILLED")


# -------------------------------------------------------------------- what a new run gets


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """{"train": {"lr": 1e-4}} -> {"train.lr": "0.0001"}; lists are kept as one value."""
    if isinstance(tree, dict):
        out: dict[str, str] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): str(tree)[:_MAX_PARAM]}


def run_context(cfg: Config) -> Logged:
    """All resolved params, the dataset/task/git tags and the dataset YAML."""
    from tunesmith.lineage import git_commit

    tags = {"dataset": cfg.name, "task": cfg.task}
    if commit := git_commit(cfg.root):
        tags["git.commit"] = commit
    return Logged(params=flatten(cfg.model_dump(mode="json", by_alias=True, exclude={"root"})),
                  tags=tags, artifacts=[(f"{DATASETS_DIR}/{cfg.name}.yaml", "data")])


def earlier_records(cfg: Config, step: str) -> list[Logged]:
    """The on-disk records of the steps before `step` (skipped in this pipeline run)."""
    from tunesmith import logged as L
    from tunesmith.steps import STEPS, output_dir

    found = []
    for earlier in STEPS[:STEPS.index(step)]:
        folder = output_dir(cfg, earlier)
        if folder is not None and (record := L.read(folder)) is not None:
            found.append(record)
    return found


def lineage_record(cfg: Config) -> Logged:
    """dvc.lock's hashes of this dataset's outputs (when the lock describes this data)."""
    from tunesmith.lineage import dvc_lock_hashes

    hashes = dvc_lock_hashes(cfg)
    return Logged(tags=hashes, artifacts=[("dvc.lock", "data")] if hashes else [])


def start_side_run(cfg: Config, name: str, tags: dict[str, str]) -> tuple[MlflowClient, str]:
    """A run beside the pipeline's, in the dataset's experiment (a `tunesmith tune` search,
    the parent of its trials); the caller ends it with the returned client."""
    client = configure(cfg)
    run = client.create_run(experiment_id(cfg, client), run_name=name,
                            tags={"dataset": cfg.name, "task": cfg.task, **tags})
    return client, run.info.run_id
