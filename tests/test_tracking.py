"""One MLflow run per pipeline run, shared across steps and processes (real MLflow, SQLite).

The run's life is `tracking.pipeline_run`; what each step logs is its result's `Logged`
record, written by the runner (tasks/runner.py) to disk and to the run.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import write_csv

from tunesmith import logged as L
from tunesmith import tracking
from tunesmith.config import load_config
from tunesmith.errors import ValidationFailed
from tunesmith.tasks.runner import run_step


@pytest.fixture(autouse=True)
def _own_tracking_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # System metrics are a sampling thread; these tests check run bookkeeping only.
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")


def test_uri_is_the_project_sqlite_file_unless_the_env_names_one(project, monkeypatch) -> None:
    cfg = load_config("toy", project)
    assert tracking.tracking_uri(cfg) == f"sqlite:///{project.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project}/other.db")
    assert tracking.tracking_uri(cfg) == f"sqlite:///{project}/other.db"


def test_run_link_points_at_the_server_or_where_mlflow_ui_serves(project, monkeypatch) -> None:
    cfg = load_config("toy", project)
    tracking._record(cfg, run_id="abc123", experiment_id="7")  # what pipeline_run records
    assert tracking.run_link(cfg, "abc123") == (
        "http://127.0.0.1:5000/#/experiments/7/runs/abc123")  # sqlite: `mlflow ui`'s default
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.org/")
    assert tracking.run_link(cfg, "abc123") == (
        "https://mlflow.example.org/#/experiments/7/runs/abc123")


def test_flatten_nested_params() -> None:
    flat = tracking.flatten({"train": {"lr": 1e-4, "lora": {"r": 8}}, "labels": ["a", "b"]})
    assert flat == {"train.lr": "0.0001", "train.lora.r": "8", "labels": "['a', 'b']"}


def test_steps_share_one_run_until_the_last_step_finishes_it(project) -> None:
    cfg = load_config("toy", project)
    client = tracking.configure(cfg)
    with tracking.pipeline_run(cfg, "ingest") as first:
        first.log(L.Logged(metrics={"a": 1.0}))
    assert client.get_run(first.run_id).info.status == "RUNNING"
    with tracking.pipeline_run(cfg, "register", closes=True) as second:
        pass
    assert second.run_id == first.run_id
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["step.ingest"] == "done" and run.data.tags["step.register"] == "done"
    assert run.data.params["train.lr"] == str(cfg.train.lr)  # the context of a new run
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "toy"
    assert exp.artifact_location == (project / "mlartifacts" / "toy").resolve().as_uri()
    with tracking.pipeline_run(cfg, "ingest") as third:
        pass
    assert third.run_id != first.run_id


def test_a_failing_step_fails_the_run_and_the_next_starts_fresh(project) -> None:
    cfg = load_config("toy", project)
    client = tracking.configure(cfg)
    with pytest.raises(RuntimeError), tracking.pipeline_run(cfg, "train") as failed:
        raise RuntimeError("boom")
    assert client.get_run(failed.run_id).info.status == "FAILED"
    assert client.get_run(failed.run_id).data.tags["step.train"] == "failed"
    assert tracking.recorded_run(cfg)["status"] == "FAILED"
    with tracking.pipeline_run(cfg, "train") as fresh:
        pass
    assert fresh.run_id != failed.run_id


def test_a_second_process_resumes_the_run(project) -> None:
    """What `dvc repro` does: each stage is its own process, the state file links them."""
    cfg = load_config("toy", project)
    with tracking.pipeline_run(cfg, "ingest") as run:
        pass
    code = (
        "from pathlib import Path\nfrom tunesmith import tracking\n"
        "from tunesmith.config import load_config\n"
        f"cfg = load_config('toy', Path({str(project)!r}))\n"
        "with tracking.pipeline_run(cfg, 'clean') as r: print(r.run_id)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == run.run_id
    tags = tracking.configure(cfg).get_run(run.run_id).data.tags
    assert tags["step.clean"] == "done"


def test_steps_log_their_records_and_a_new_run_gets_the_skipped_steps(project) -> None:
    """ingest and clean log their own records; validation failing ends the run FAILED with
    its report logged. A pipeline run that starts at validate (ingest and clean unchanged,
    so skipped) gets their records from disk; a run left RUNNING by a dead pipeline is
    closed when a flow starts."""
    cfg = load_config("toy", project)
    client = tracking.configure(cfg)
    digest = run_step(cfg, "ingest").digest
    run_step(cfg, "clean")
    run_id = tracking.recorded_run(cfg)["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING"
    assert run.data.tags["data.raw_sha256"] == digest
    assert run.data.metrics["data/raw_rows"] == 80 and run.data.metrics["clean/rows_out"] == 80
    inputs = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
    report = json.loads((cfg.dirs.clean / "report.json").read_text())
    assert inputs == {f"toy-{s}": report["digests"][s][:32] for s in ("train", "val", "test")}
    assert (cfg.dirs.clean / "logged.json").is_file()  # the record, for later processes

    strict = load_config("toy", project, ["validate.min_rows=1000"])
    with pytest.raises(ValidationFailed):
        run_step(strict, "validate")
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["step.validate"] == "failed"
    assert run.data.tags["validation.success"] == "false"
    assert run.data.metrics["validate/n_failed"] >= 1
    assert {a.path for a in client.list_artifacts(run_id, "validation")} == {
        "validation/summary.md", "validation/result.json"}

    run_step(cfg, "validate")  # the next pipeline run, starting where data changed nothing
    second = tracking.recorded_run(cfg)["run_id"]
    run = client.get_run(second)
    assert second != run_id and run.info.status == "RUNNING"
    assert run.data.tags["data.raw_sha256"] == digest  # from ingest's logged.json
    assert run.data.metrics["clean/rows_out"] == 80  # from clean's
    assert run.data.tags["validation.success"] == "true"
    assert {"data/toy.yaml", "data/manifest.json", "data/report.json"} <= {
        a.path for a in client.list_artifacts(second, "data")}

    tracking.close_stale(cfg)  # a flow starting now: that run's pipeline died
    assert client.get_run(second).info.status == "KILLED"
    assert tracking.current_run_id(cfg) is None


def test_training_curves_become_step_series(project, tiny_bert) -> None:
    """The train step's record: curve.csv as step metrics, the summary's numbers."""
    from conftest import make_rows

    write_csv(project / "data" / "toy.csv", make_rows(60))
    cfg = load_config("toy", project, ["train.epochs=1", "train.log_every_steps=1"])
    for step in ("ingest", "clean", "validate", "tokenize", "train"):
        run_step(cfg, step)
    client = tracking.configure(cfg)
    run_id = tracking.recorded_run(cfg)["run_id"]
    history = client.get_metric_history(run_id, "curve/loss")
    assert len(history) >= 3 and [m.step for m in history] == sorted(m.step for m in history)
    assert client.get_run(run_id).data.metrics["train/steps"] == len(history)


def test_an_unreachable_store_is_one_line_and_nothing_is_lost(project, monkeypatch, capsys):
    """A tracking URI to a closed port: one line, exit 5; a read-only SQLite store at
    register: one line, the trained model stays on disk, nothing is registered."""
    import socket

    from cli_helpers import run_cli

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    closed = run_cli(["step", "ingest", "-d", "toy", "--set",
                      f"tracking.uri=http://127.0.0.1:{port}"], project, monkeypatch, capsys)
    assert closed.code == 5 and "Traceback" not in closed.err
    (line,) = [x for x in closed.err.splitlines() if x.startswith("error: ")]
    assert f"127.0.0.1:{port} is unreachable or read-only" in line

    cfg = load_config("toy", project, ["train.epochs=1"])
    for step in ("ingest", "clean", "validate", "tokenize", "train", "evaluate"):
        run_step(cfg, step)
    # The same store opened read-only (SQLite's mode=ro: file modes do not stop root).
    monkeypatch.setenv("MLFLOW_TRACKING_URI",
                       f"sqlite:///file:{project / 'mlflow.db'}?mode=ro&uri=true")
    result = run_cli(["step", "register", "-d", "toy", "--set", "train.epochs=1"], project,
                     monkeypatch, capsys)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert result.code == 5 and "unreachable or read-only" in result.err
    assert (cfg.dirs.model / "model" / "model.safetensors").is_file()
    client = tracking.configure(cfg)
    assert client.search_model_versions("name='toy'") == []
