"""One MLflow run per pipeline run, shared across steps and processes (real MLflow, SQLite)."""

from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import pandas as pd
import pytest
from registry_helpers import toy_config, write_splits

from tunesmith import tracking


@pytest.fixture(autouse=True)
def _own_tracking_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # System metrics are a sampling thread; these tests check run bookkeeping only.
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")


def test_uri_is_the_project_sqlite_file_unless_the_env_names_one(project, monkeypatch) -> None:
    cfg = toy_config(project)
    assert tracking.tracking_uri(cfg) == f"sqlite:///{project.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project}/other.db")
    assert tracking.tracking_uri(cfg) == f"sqlite:///{project}/other.db"


def test_flatten_nested_params() -> None:
    flat = tracking.flatten({"train": {"lr": 1e-4, "lora": {"r": 8}}, "labels": ["a", "b"]})
    assert flat == {"train.lr": "0.0001", "train.lora.r": "8", "labels": "['a', 'b']"}


def test_steps_share_one_run_until_register_finishes_it(project) -> None:
    cfg = toy_config(project)
    client = tracking.configure(cfg)
    with tracking.active_run(cfg, "train") as first:
        mlflow.log_metric("a", 1.0)
    assert client.get_run(first).info.status == "RUNNING"
    with tracking.active_run(cfg, "evaluate") as second:
        with tracking.active_run(cfg, "nested") as inner:  # re-entrant inside a flow's run
            assert inner == second
    assert second == first
    run = client.get_run(first)
    assert run.data.tags["step.train"] == "done" and run.data.tags["step.evaluate"] == "done"
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "toy"
    assert exp.artifact_location == (project / "mlartifacts" / "toy").resolve().as_uri()

    assert tracking.finish_run(cfg) == first
    assert client.get_run(first).info.status == "FINISHED"
    with tracking.active_run(cfg) as third:
        pass
    assert third != first


def test_a_failing_step_fails_the_run_and_the_next_starts_fresh(project) -> None:
    cfg = toy_config(project)
    client = tracking.configure(cfg)
    with pytest.raises(RuntimeError), tracking.active_run(cfg, "train") as failed:
        raise RuntimeError("boom")
    assert client.get_run(failed).info.status == "FAILED"
    assert client.get_run(failed).data.tags["step.train"] == "failed"
    with tracking.active_run(cfg) as fresh:
        pass
    assert fresh != failed


def test_a_second_process_resumes_the_run(project) -> None:
    """What `dvc repro` does: each stage is its own process, the state file links them."""
    cfg = toy_config(project)
    with tracking.active_run(cfg, "ingest") as run_id:
        pass
    code = (
        "from pathlib import Path\nfrom tunesmith import tracking\n"
        "from tunesmith.config import load_config\n"
        f"cfg = load_config('toy', Path({str(project)!r}))\n"
        "with tracking.active_run(cfg, 'clean') as rid: print(rid)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == run_id
    saved = json.loads(tracking.run_file(cfg).read_text())
    assert saved["run_id"] == run_id
    tags = tracking.configure(cfg).get_run(run_id).data.tags
    assert tags["step.clean"] == "done"


def test_log_context_records_params_lineage_validation_and_curves(project) -> None:
    cfg = toy_config(project)
    write_splits(cfg)
    (cfg.dirs.raw).mkdir(parents=True)
    (cfg.dirs.raw / "manifest.json").write_text(json.dumps({"source": "data/toy.csv",
                                                             "sha256": "raw123"}))
    cfg.dirs.validation.mkdir(parents=True)
    (cfg.dirs.validation / "summary.md").write_text("# all good\n")
    (cfg.dirs.validation / "result.json").write_text(json.dumps({"success": True}))
    cfg.dirs.model.mkdir(parents=True)
    pd.DataFrame({"step": [1, 2, 3], "loss": [0.9, 0.5, 0.3], "eval_loss": [None, 0.6, None]}
                 ).to_csv(cfg.dirs.model / "curve.csv", index=False)
    (cfg.dirs.model / "train_summary.json").write_text(json.dumps({"train_runtime": 1.5}))

    with tracking.active_run(cfg, "evaluate") as run_id:
        tracking.log_context(cfg, run_id)
        tracking.log_context(cfg, run_id)  # a second step logging again adds nothing
    client = tracking.configure(cfg)
    run = client.get_run(run_id)
    assert run.data.params["train.lr"] == str(cfg.train.lr)
    assert run.data.params["register.primary_metric"] == "f1_macro"
    assert run.data.tags.get("data.raw_sha256") == "raw123"
    assert run.data.tags["data.test.digest"] == "toy-test-0-False"
    assert run.data.tags["validation.success"] == "true"
    inputs = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
    assert inputs == {"toy-train": "toy-train-0-False", "toy-val": "toy-val-0-False",
                      "toy-test": "toy-test-0-False"}
    history = client.get_metric_history(run_id, "curve/loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.9), (2, 0.5), (3, 0.3)]
    assert [m.step for m in client.get_metric_history(run_id, "curve/eval_loss")] == [2]
    assert run.data.metrics["train/train_runtime"] == 1.5
    paths = {a.path for a in client.list_artifacts(run_id, "validation")}
    assert paths == {"validation/summary.md", "validation/result.json"}
    data = {a.path for a in client.list_artifacts(run_id, "data")}
    assert {"data/toy.yaml", "data/manifest.json", "data/report.json"} <= data


def test_run_step_logs_each_steps_outputs_and_a_stopped_pipeline_starts_fresh(project) -> None:
    """What `tunesmith step` and the flow do: ingest and clean log their own outputs into
    one run; validation failing ends it FAILED (its report logged); the next pipeline run is
    a new run, and a run left RUNNING by a dead pipeline is closed when a flow starts."""
    from flows.retrain import _close_stale_run
    from tasks.clean import clean
    from tasks.ingest import ingest
    from tunesmith.errors import ValidationFailed

    cfg = toy_config(project)
    client = tracking.configure(cfg)
    first = tracking.run_step(cfg, "ingest", ingest).digest
    tracking.run_step(cfg, "clean", clean)
    run_id = json.loads(tracking.run_file(cfg).read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING"
    assert run.data.tags["data.raw_sha256"] == first
    assert run.data.metrics["data/raw_rows"] == 80 and run.data.metrics["clean/rows_out"] == 80
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"toy-train", "toy-val",
                                                                   "toy-test"}
    assert run.data.params["train.lr"] == str(cfg.train.lr)  # logged when the run started

    def failing_validate(cfg):
        cfg.dirs.validation.mkdir(parents=True, exist_ok=True)
        (cfg.dirs.validation / "result.json").write_text(json.dumps(
            {"success": False, "n_expectations": 3, "n_failed": 1}))
        raise ValidationFailed("expect_table_row_count_to_be_between failed")

    with pytest.raises(ValidationFailed):
        tracking.run_step(cfg, "validate", failing_validate)
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["step.validate"] == "failed"
    assert run.data.tags["validation.success"] == "false"
    assert run.data.metrics["validate/n_failed"] == 1

    tracking.run_step(cfg, "ingest", ingest)  # the next pipeline run
    second = json.loads(tracking.run_file(cfg).read_text())["run_id"]
    assert second != run_id and client.get_run(second).info.status == "RUNNING"
    _close_stale_run(cfg)  # a flow starting now: that run's pipeline died
    assert client.get_run(second).info.status == "KILLED"
    assert tracking.current_run_id(cfg) is None
