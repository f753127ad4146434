"""One MLflow run per pipeline run, shared by every step, even across processes.

Steps run in one process (Prefect) or one process each (`dvc repro`), so the run id lives
in a file, `cfg.dirs.state/mlflow_run.json`. `active_run(cfg)` resumes that run while it is
RUNNING and starts a new one otherwise (the first step that actually executes creates it);
leaving the context keeps it RUNNING for the next step, an exception ends it FAILED (so
the next pipeline run starts fresh), and `register` closes it with `finish_run`.

`run_step` is what the CLI (`tunesmith step`, hence `dvc repro`) and the flow call: the
step inside the run, then that step's own outputs logged from disk. The `log_*` helpers
skip what the run already has, so evaluate can backfill what earlier steps left when
they did not execute in this pipeline run (DVC or the Prefect cache skipped them).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import pandas as pd
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from tunesmith.config import DATASETS_DIR, Config
from tunesmith.errors import ValidationFailed
from tunesmith.plots import read_curve

RUN_FILE = "mlflow_run.json"
SPLITS = ("train", "val", "test")
_MAX_PARAM = 6000  # MLflow's limit on a param value
T = TypeVar("T")


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
    uri = tracking_uri(cfg)
    # Every step opens the pipeline's run; MLflow's INFO lines (system-metrics thread
    # start/stop, DB setup: 4+ per step) would bury the one-line error contract. Set here as
    # well as by the CLI's env default: MLflow reads that variable only when first imported.
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
    if tracking_uri(cfg).startswith(("sqlite:", "file:")) or "://" not in tracking_uri(cfg):
        # A remote server decides its own artifact store; a local one keeps them in the project.
        location = (cfg.root / cfg.tracking.artifact_location / cfg.name).resolve().as_uri()
    return client.create_experiment(cfg.name, artifact_location=location)


def run_file(cfg: Config) -> Path:
    return cfg.dirs.state / RUN_FILE


def current_run_id(cfg: Config) -> str | None:
    """The pipeline run recorded in the state file if it is still RUNNING in this store."""
    path = run_file(cfg)
    if not path.is_file():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    if saved.get("tracking_uri") != tracking_uri(cfg):
        return None
    try:
        run = configure(cfg).get_run(saved["run_id"])
    except mlflow.exceptions.MlflowException:
        return None
    return run.info.run_id if run.info.status == "RUNNING" else None


@contextmanager
def active_run(cfg: Config, step: str = "") -> Iterator[str]:
    """Resume or start the pipeline run and yield its id; see the module docstring.

    Re-entrant: inside an already active MLflow run (a flow or `run_step` that opened it)
    it just yields that run. An exception marks the run FAILED so the next step starts a
    fresh one. A new run gets all params, the git commit and the dataset YAML at once.
    """
    client = configure(cfg)
    if (outer := mlflow.active_run()) is not None:
        yield outer.info.run_id
        return
    exp_id = experiment_id(cfg, client)
    run_id = current_run_id(cfg)
    # psutil sampling in a thread; an explicit env setting (e.g. false in CI) wins.
    system = None if "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING" in os.environ else True
    run = mlflow.start_run(
        run_id=run_id, experiment_id=None if run_id else exp_id, log_system_metrics=system,
        run_name=None if run_id else f"{cfg.name}-pipeline",
    )
    rid = run.info.run_id
    run_file(cfg).parent.mkdir(parents=True, exist_ok=True)
    run_file(cfg).write_text(
        json.dumps({"run_id": rid, "experiment_id": run.info.experiment_id,
                    "tracking_uri": tracking_uri(cfg), "status": "RUNNING"}),
        encoding="utf-8",
    )
    if run_id is None:
        log_run_context(cfg, client, rid)
    if step:
        client.set_tag(rid, f"step.{step}", "started")
    try:
        yield rid
    except BaseException:
        if step:
            client.set_tag(rid, f"step.{step}", "failed")
        _end(client, rid, "FAILED")
        _note_status(cfg, "FAILED")
        raise
    if step:
        client.set_tag(rid, f"step.{step}", "done")
    # Stays open for the next step (or process), unless the step finished it (register).
    if client.get_run(rid).info.status == "RUNNING":
        _end(client, rid, "RUNNING")


def _end(client: MlflowClient, run_id: str, status: str) -> None:
    """End the fluent run if it is this one (stops its system-metrics thread), else by id."""
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        mlflow.end_run(status=status)
    else:
        client.set_terminated(run_id, status=status)


def _note_status(cfg: Config, status: str) -> None:
    """Record the run's end in the state file too: the flow reads it without importing MLflow."""
    saved = json.loads(run_file(cfg).read_text(encoding="utf-8"))
    run_file(cfg).write_text(json.dumps({**saved, "status": status}), encoding="utf-8")


def run_step(cfg: Config, step: str, func: Callable[[Config], T]) -> T:
    """`func(cfg)` inside the pipeline's run, then the step's outputs logged to it.

    What the CLI (`tunesmith step`, `dvc repro`) and the flow call. Evaluate and register
    log their own outputs (their inner `active_run` joins this one).
    """
    log = STEP_LOGGERS.get(step)
    with active_run(cfg, step) as run_id:
        try:
            result = func(cfg)
        except ValidationFailed:
            if log is not None:  # validate writes its report before raising: show it
                log(cfg, configure(cfg), run_id)
            raise
        if log is not None:
            log(cfg, configure(cfg), run_id)
    return result


def finish_run(cfg: Config, status: str = "FINISHED") -> str | None:
    """End the pipeline run recorded in the state file; returns its id (None if none ran)."""
    run_id = current_run_id(cfg)
    if run_id is None:
        return None
    _end(configure(cfg), run_id, status)
    _note_status(cfg, status)
    return run_id


# ----------------------------------------------------------------------- what gets logged


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """{"train": {"lr": 1e-4}} -> {"train.lr": "0.0001"}; lists are kept as one value."""
    if isinstance(tree, dict):
        out: dict[str, str] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): str(tree)[:_MAX_PARAM]}


def log_params(cfg: Config, client: MlflowClient, run_id: str) -> None:
    """All resolved params, flattened; keys the run already has are left as they are."""
    params = flatten(cfg.model_dump(mode="json", by_alias=True, exclude={"root"}))
    have = client.get_run(run_id).data.params
    new = {k: v for k, v in params.items() if k not in have}
    for start in range(0, len(new), 100):  # log_params sends at most 100 per batch
        mlflow.log_params(dict(list(new.items())[start:start + 100]))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _split_digest(report: dict[str, Any], split: str) -> str | None:
    """The clean step's digest of a split, wherever its report keeps it."""
    for node in (report.get("splits", {}).get(split), report.get(split)):
        if isinstance(node, dict) and node.get("digest"):
            return str(node["digest"])
    digests = report.get("digests")
    return str(digests[split]) if isinstance(digests, dict) and split in digests else None


def git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def dvc_lock_hashes(cfg: Config) -> dict[str, str]:
    """{"dvc.<stage>.<out path>": md5} for this dataset's stages in dvc.lock.

    Empty unless the lock's `ingest@NAME` recorded the source file as it is now: after a
    `tunesmith run` on newer data the lock (from an older `dvc repro`) describes other data.
    """
    import hashlib

    import yaml

    path = cfg.root / "dvc.lock"
    if not path.is_file():
        return {}
    stages = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages", {})
    source = cfg.root / cfg.source.path
    recorded = [d.get("md5") for d in (stages.get(f"ingest@{cfg.name}") or {}).get("deps", [])
                if d.get("path") == cfg.source.path]
    if not source.is_file() or not recorded or \
            recorded[0] != hashlib.md5(source.read_bytes()).hexdigest():
        return {}
    out = {}
    for stage, body in stages.items():
        if not stage.endswith(f"@{cfg.name}"):
            continue
        for item in body.get("outs", []) or []:
            digest = item.get("md5") or item.get("hash") or ""
            out[f"dvc.{stage.split('@')[0]}.{item.get('path')}"] = str(digest)
    return out


def _once(client: MlflowClient, run_id: str, what: str) -> bool:
    """True the first time `what` is logged to this run (a tag marks it done)."""
    return client.get_run(run_id).data.tags.get(f"logged.{what}") != "true"


def _artifacts(paths: list[Path], folder: str) -> None:
    for path in paths:
        if path.is_file():
            mlflow.log_artifact(str(path), folder)


def _finite(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}


def log_run_context(cfg: Config, client: MlflowClient, run_id: str) -> None:
    """What a new run gets before any step: all params, dataset/task, git commit, YAML."""
    log_params(cfg, client, run_id)
    tags = {"dataset": cfg.name, "task": cfg.task}
    if commit := git_commit(cfg.root):
        tags["git.commit"] = commit
    mlflow.set_tags(tags)
    _artifacts([cfg.root / DATASETS_DIR / f"{cfg.name}.yaml"], "data")


def log_ingest(cfg: Config, client: MlflowClient, run_id: str) -> None:
    """The raw copy's manifest: source, rows, sha256 (the data version the run came from)."""
    manifest = _read_json(cfg.dirs.raw / "manifest.json")
    if not manifest or not _once(client, run_id, "ingest"):
        return
    mlflow.set_tags({"data.source": str(manifest.get("source") or cfg.source.path),
                     "data.raw_sha256": str(manifest.get("sha256", ""))})
    mlflow.log_metrics(_finite({"data/raw_rows": manifest.get("rows"),
                                "data/raw_bytes": manifest.get("bytes")}))
    _artifacts([cfg.dirs.raw / "manifest.json"], "data")
    mlflow.set_tag("logged.ingest", "true")


def log_clean(cfg: Config, client: MlflowClient, run_id: str) -> None:
    """Rows kept and dropped by reason, and one `log_input` dataset per split with its digest."""
    report = _read_json(cfg.dirs.clean / "report.json")
    if not report or not _once(client, run_id, "clean"):
        return
    values = {"clean/rows_in": report.get("rows_in"), "clean/rows_out": report.get("rows_out")}
    for reason, info in (report.get("dropped") or {}).items():
        values[f"clean/dropped/{reason}"] = info.get("count") if isinstance(info, dict) else info
    for split, n in (report.get("split_sizes") or {}).items():
        values[f"clean/{split}_rows"] = n
    mlflow.log_metrics(_finite(values))
    tags = {}
    for split in SPLITS:
        path = cfg.dirs.clean / f"{split}.parquet"
        if not path.is_file():
            continue
        frame = pd.read_parquet(path)
        with warnings.catch_warnings():
            # A local path matches two equivalent source types; MLflow warns and picks one.
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(
                frame, source=str(path), name=f"{cfg.name}-{split}",
                # MLflow caps dataset digests at 36 characters; ours are sha256 hex.
                digest=(_split_digest(report, split) or "")[:32] or None,
                targets="label" if "label" in frame else None,
            )
        mlflow.log_input(dataset, context=split)
        tags[f"data.{split}.digest"] = _split_digest(report, split) or dataset.digest
        tags[f"data.{split}.rows"] = str(len(frame))
    mlflow.set_tags(tags)
    _artifacts([cfg.dirs.clean / "report.json", cfg.dirs.clean / "dropped.csv"], "data")
    mlflow.set_tag("logged.clean", "true")


def log_validation(cfg: Config, client: MlflowClient, run_id: str) -> None:
    """The validate step's summary and result, if it ran (logged on failure too)."""
    result = _read_json(cfg.dirs.validation / "result.json")
    if not result or not _once(client, run_id, "validate"):
        return
    _artifacts([cfg.dirs.validation / "summary.md", cfg.dirs.validation / "result.json"],
               "validation")
    if "success" in result:
        mlflow.set_tag("validation.success", str(bool(result["success"])).lower())
    mlflow.log_metrics(_finite({"validate/n_expectations": result.get("n_expectations"),
                                "validate/n_failed": result.get("n_failed")}))
    mlflow.set_tag("logged.validate", "true")


def log_tokenize(cfg: Config, client: MlflowClient, run_id: str) -> None:
    """Token report: rows per split, length percentiles, share truncated by max_length."""
    report = _read_json(cfg.dirs.tokenized / "token_report.json")
    if not report or not _once(client, run_id, "tokenize"):
        return
    values = {"tokenize/truncated_share": report.get("truncated_share")}
    values.update({f"tokenize/{k}_tokens_{split}": v
                   for split, stats in (report.get("tokens") or {}).items()
                   if isinstance(stats, dict) for k, v in stats.items()})
    mlflow.log_metrics(_finite(values))
    _artifacts([cfg.dirs.tokenized / "token_report.json"], "tokenize")
    mlflow.set_tag("logged.tokenize", "true")


def log_dvc_lock(cfg: Config) -> None:
    """dvc.lock's hashes of this dataset's outputs, only if the lock describes this data."""
    hashes = dvc_lock_hashes(cfg)
    if hashes:
        mlflow.set_tags({k[:250]: v for k, v in hashes.items()})
        _artifacts([cfg.root / "dvc.lock"], "data")


def log_training(cfg: Config, client: MlflowClient, run_id: str) -> None:
    """curve.csv as step metrics `curve/<column>` and train_summary.json (once per run)."""
    if not (cfg.dirs.model / "train_summary.json").is_file() or not _once(client, run_id, "train"):
        return
    have = client.get_run(run_id).data.metrics
    curve_path = cfg.dirs.model / "curve.csv"
    curve = read_curve(curve_path)
    if curve is not None:
        numeric = curve.select_dtypes("number")
        steps = numeric["step"] if "step" in numeric else pd.Series(range(len(numeric)))
        batch = [
            Metric(f"curve/{col}", float(value), 0, int(step))
            for col in numeric.columns if col != "step" and f"curve/{col}" not in have
            for step, value in zip(steps, numeric[col], strict=False) if pd.notna(value)
        ]
        for start in range(0, len(batch), 1000):
            client.log_batch(run_id, metrics=batch[start:start + 1000])
        mlflow.log_artifact(str(curve_path), "training")
    summary_path = cfg.dirs.model / "train_summary.json"
    if summary_path.is_file():
        summary = _read_json(summary_path)
        mlflow.log_artifact(str(summary_path), "training")
        scalars = {
            f"train/{k}": float(v) for k, v in summary.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and f"train/{k}" not in have
        }
        if scalars:
            mlflow.log_metrics(scalars)
    mlflow.set_tag("logged.train", "true")


def log_context(cfg: Config, run_id: str) -> None:
    """Backfill what earlier steps left on disk but did not log to this run (they were
    skipped as unchanged), then dvc.lock's hashes: params, data, validation, training."""
    client = configure(cfg)
    log_params(cfg, client, run_id)
    for log in (log_ingest, log_clean, log_validation, log_tokenize, log_training):
        log(cfg, client, run_id)
    log_dvc_lock(cfg)


STEP_LOGGERS: dict[str, Callable[[Config, MlflowClient, str], None]] = {
    "ingest": log_ingest, "clean": log_clean, "validate": log_validation,
    "tokenize": log_tokenize, "train": log_training,
}
