"""Choosing the learning rate on the validation split: `tunesmith tune` and `train.lr: auto`.

Real Optuna, the real training core on the session's tiny BERT, MLflow on SQLite in the
project; the test split is deleted before a search to show tuning never reads it.
"""

from __future__ import annotations

import json
import shutil

import pytest
from cli_helpers import run_cli
from mlflow.tracking import MlflowClient
from registry_helpers import (
    one_torch_thread,  # noqa: F401 (a fixture, used by name)
    run_pipeline,
    toy_config,
)

from tunesmith.config import load_config
from tunesmith.errors import ConfigError
from tunesmith.tracking import start_side_run, tracking_uri
from tunesmith.tune import Dim, TuneRuns, apply, parse_dim, search, space_of
from tunesmith.tune_cli import prepare

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHORT = ("tune.epochs=2", "train.batch_size=16")


@pytest.fixture(autouse=True)
def _own_tracking_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


# ------------------------------------------------------------------------- the space


def test_space_specs_parse_and_bad_ones_are_one_line_errors():
    assert parse_dim("train.lr", "1e-5:1e-3:log") == Dim("train.lr", "float", 1e-5, 1e-3, True)
    assert parse_dim("train.lora.r", "4:16") == Dim("train.lora.r", "int", 4, 16, False)
    assert parse_dim("train.scheduler", "linear,cosine").choices == ("linear", "cosine")
    for key, spec, needle in [("train.lr", "1e-3:1e-5", "low < high"),
                              ("train.lr", "0:1:log", "low > 0"),
                              ("train.lr", "a:b", "numbers"),
                              ("tokenize.max_length", "16:64", "only training options"),
                              ("train.method", "full,lora", "only training options"),
                              ("train.lr", "1e-4", "expected")]:
        with pytest.raises(ConfigError, match=needle):
            parse_dim(key, spec)


def test_the_default_space_is_the_methods_rate_times_ten_either_way(project):
    [lora] = space_of(toy_config(project, "train.method=lora", "train.lr=null"))
    assert (lora.key, lora.kind, lora.log) == ("train.lr", "float", True)
    assert (lora.low, lora.high) == (pytest.approx(5e-5), pytest.approx(5e-3))
    flags = space_of(toy_config(project), ["train.lr=1e-5:1e-3:log", "train.lora.r=4:8"])
    assert [d.key for d in flags] == ["train.lr", "train.lora.r"]
    cfg = toy_config(project)
    tuned = apply(cfg.train, {"train.lr": 3e-4, "train.lora.r": 4})
    assert (tuned.lr, tuned.lora.r) == (3e-4, 4)
    assert (cfg.train.lr, cfg.train.lora.r) == (1e-3, 8)  # the config is not changed
    with pytest.raises(ConfigError, match="no such training option"):
        apply(cfg.train, {"train.nope": 1})


# ------------------------------------------------------------------------- searching


def test_search_never_reads_the_test_split_and_logs_each_trial_as_a_child_run(project):
    import optuna

    cfg = toy_config(project, *SHORT)
    prepare(cfg, echo=lambda _: None)
    # Tuning must work without any test data: delete every copy of the test split.
    (cfg.dirs.clean / "test.parquet").unlink()
    shutil.rmtree(cfg.dirs.tokenized / "test")

    class PruneLaterTrials(optuna.pruners.BasePruner):
        """Trials after the first two stop after their first epoch."""

        def prune(self, study, trial):
            return trial.number >= 2

    runs = TuneRuns("toy", *start_side_run(cfg, "toy-tune", {}), owned=True)
    space = [Dim("train.lr", "float", 1e-4, 1e-2, log=True)]
    result = search(cfg, trials=3, space=space, runs=runs, pruner=PruneLaterTrials())
    assert not (cfg.dirs.clean / "test.parquet").exists()
    assert [r["state"] for r in result.trials] == ["complete", "complete", "pruned"]
    assert result.metric == "f1_macro" and result.greater_is_better
    assert 1e-4 <= result.best["train.lr"] <= 1e-2
    done = [r for r in result.trials if r["state"] == "complete"]
    assert result.value == max(r["value"] for r in done)
    assert result.set_flags() == [f"--set train.lr={result.best['train.lr']:.3g}"]

    client = MlflowClient(tracking_uri(cfg), tracking_uri(cfg))
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.info.run_name == "toy-tune"
    assert float(parent.data.params["tune.best.train.lr"]) == result.best["train.lr"]
    assert parent.data.params["tune.space.train.lr"] == "0.0001:0.01:log"
    exp = parent.info.experiment_id
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 3
    states = {c.data.tags["tune.trial"]: c.data.tags["tune.state"] for c in children}
    assert states == {"0": "complete", "1": "complete", "2": "pruned"}
    pruned = next(c for c in children if c.data.tags["tune.state"] == "pruned")
    history = client.get_metric_history(pruned.info.run_id, "val/f1_macro")
    assert [m.step for m in history] == [1]  # stopped after its first epoch
    assert {c.data.params["train.lr"] for c in children} == \
        {str(r["train.lr"]) for r in result.trials}


def test_tune_cli_prints_set_flags_and_writes_the_yaml_keeping_comments(project, monkeypatch,
                                                                        capsys):
    toy_config(project)  # grows the toy data to 280 rows
    path = project / "datasets" / "toy.yaml"
    path.write_text("# my notes on toy\n" + path.read_text())
    overrides = ["--set", "evaluate.latency_examples=4", "--set", "train.epochs=6",
                 "--set", "train.batch_size=16", "--set", "register.baseline_can_win=false"]
    out = run_cli(["tune", "--dataset", "toy", "--trials", "2", "--epochs", "1", *overrides],
                  project, monkeypatch, capsys)
    assert out.code == 0, out.err
    assert "use it: tunesmith run --dataset toy --set train.lr=" in out.out
    assert "(test unused)" in out.out and out.out.count("  trial ") == 2

    written = run_cli(["tune", "--dataset", "toy", "--trials", "2", "--epochs", "1", "--write",
                       "--space", "train.lr=1e-4:1e-2:log", *overrides],
                      project, monkeypatch, capsys)
    assert written.code == 0, written.err
    assert "tune: running" not in written.out  # the splits were current: not made again
    assert path.read_text().startswith("# my notes on toy\n")
    best = load_config("toy", project).train.lr  # the YAML's value now
    assert 1e-4 <= best <= 1e-2 and best != 5e-3  # conftest's YAML had 5e-3
    assert f"train.lr={best:.3g}" in written.out and "wrote train.lr into" in written.out


# --------------------------------------------------------------- `train.lr: auto`


def test_lr_auto_searches_before_training_and_logs_the_choice_on_the_pipeline_run(project):
    cfg = toy_config(project, "train.lr=auto", "tune.trials=2", "tune.epochs=1",
                     "tune.space={train.lr: '1e-4:1e-2:log'}")
    assert cfg.train.lr == "auto"
    result = run_pipeline(cfg, until="train")["train"]
    chosen = result.tuned["train.lr"]
    assert 1e-4 <= chosen <= 1e-2 and result.lr == chosen
    summary = json.loads((cfg.dirs.model / "train_summary.json").read_text())
    assert summary["lr"] == chosen and summary["epochs"] == 6  # the real run, not a trial
    client = MlflowClient(tracking_uri(cfg), tracking_uri(cfg))
    run_id = json.loads((cfg.dirs.state / "mlflow_run.json").read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.data.params["train.lr"] == "auto"
    assert float(run.data.tags["tune.best.train.lr"]) == chosen
    assert run.data.metrics["train/lr"] == chosen
    children = client.search_runs([run.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{run_id}'")
    assert len(children) == 2
    assert all(c.data.tags["tunesmith.kind"] == "tune-trial" for c in children)
