"""Metrics, the TF-IDF baseline and the real evaluate step on toy data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SHARED_DATA, make_rows
from mlflow.tracking import MlflowClient
from registry_helpers import (
    DEGRADED,
    one_torch_thread,  # noqa: F401 (a fixture, used by name)
    run_pipeline,
    toy_config,
)

from tunesmith import metrics as M
from tunesmith.errors import DataError, EnvironmentProblem
from tunesmith.objectives.classification.registering import BASELINE_DIR
from tunesmith.objectives.text_classification.baseline import baseline_proba, fit_baseline
from tunesmith.tasks.evaluate import evaluate
from tunesmith.tracking import tracking_uri

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _own_tracking_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


# -------------------------------------------------------------------------- metrics


def test_binary_metrics_match_hand_computed_values() -> None:
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    m = M.classification_metrics(y, proba, ["neg", "pos"])
    assert m["accuracy"] == 0.75
    assert m["confusion_matrix"] == [[1, 1], [0, 2]]
    assert m["per_class"]["pos"] == {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    assert m["roc_auc"] == 1.0  # every positive outranks every negative
    assert m["f1_macro"] == pytest.approx((0.8 + 2 / 3) / 2)
    # Confidences 0.9, 0.6, 0.8, 0.7 fall in four bins; only the 0.6 one is wrong:
    # ECE = (0.1 + 0.6 + 0.2 + 0.3) / 4.
    assert m["ece"] == pytest.approx(0.3)


def test_multiclass_one_vs_rest_and_a_missing_class() -> None:
    y = np.array([0, 1, 2, 2])
    proba = np.eye(3)[[0, 1, 2, 2]] * 0.7 + 0.1
    m = M.classification_metrics(y, proba, ["a", "b", "c"])
    assert m["accuracy"] == 1.0 and m["roc_auc"] == 1.0 and m["pr_auc"] == 1.0
    absent = M.classification_metrics(np.array([0, 0, 2]), proba[:3], ["a", "b", "c"])
    assert absent["roc_auc"] is None and absent["per_class"]["b"]["support"] == 0
    curves = M.curve_points(y, proba, ["a", "b", "c"])
    assert {r["class"] for r in curves["roc"]} == {"a", "b", "c"}


def test_perfectly_calibrated_confidence_has_zero_ece() -> None:
    y = np.array([0] * 8 + [1] * 2)  # predicted class 0 at 0.8: right 8 times in 10
    proba = np.tile([0.8, 0.2], (10, 1))
    assert M.expected_calibration_error(y, proba) == pytest.approx(0.0)


def test_baseline_learns_keywords_and_pads_unseen_classes() -> None:
    texts = ["good fun", "great fun", "bad dull", "awful dull"] * 5
    y = np.array([0, 0, 1, 1] * 5)
    model = fit_baseline(texts, y)
    proba = baseline_proba(model, ["good great", "dull awful"], n_classes=3)
    assert proba.shape == (2, 3) and proba[:, 2].tolist() == [0.0, 0.0]
    assert proba.argmax(1).tolist() == [0, 1]


# ----------------------------------------------------------------- the evaluate step


def test_evaluate_writes_the_report_and_logs_it(project) -> None:
    cfg = toy_config(project)
    results = run_pipeline(cfg, until="evaluate")
    result = results["evaluate"]

    out = cfg.dirs.eval
    report = json.loads((out / "metrics.json").read_text())
    n = report["n"]
    assert report["f1_macro"] == result.metrics["f1_macro"] >= 0.7
    assert n == 28 and sum(map(sum, report["confusion_matrix"])) == n
    assert set(report["per_class"]) == {"neg", "pos"}
    assert report["latency_ms_batch1"] > 0 and report["latency_ms_batched"] > 0
    assert 0 < report["model_size_mb"] < 1 and report["n_params"] > 1000
    assert report["baseline"]["name"] == "TF-IDF+LR"
    assert report["baseline"]["accuracy"] >= 0.9  # one keyword decides the toy label
    assert "champion" not in report and result.champion_version is None
    assert len(pd.read_csv(out / "confusion.csv")) == n
    assert list(pd.read_csv(out / "roc.csv").columns) == ["class", "fpr", "tpr"]
    assert list(pd.read_csv(out / "pr.csv").columns) == ["class", "recall", "precision"]
    for png in ("confusion_matrix", "roc", "pr", "training_curves"):
        assert (out / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
    wrong = pd.read_csv(out / "misclassified.csv")
    assert len(wrong) == n - round(report["accuracy"] * n)
    assert (out / "misclassified.md").read_text().startswith("# Worst misclassified")

    client = MlflowClient(tracking_uri(cfg), tracking_uri(cfg))
    run_id = json.loads((cfg.dirs.state / "mlflow_run.json").read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING"  # left open for register
    assert run.data.metrics["test/f1_macro"] == report["f1_macro"]
    assert run.data.metrics["baseline/f1_macro"] == report["baseline"]["f1_macro"]
    assert "class/pos/recall" in run.data.metrics
    logged = {a.path for a in client.list_artifacts(run_id, "eval")}
    assert {"eval/metrics.json", "eval/confusion_matrix.png", "eval/misclassified.md"} <= logged


def test_an_untrained_model_is_flagged_against_the_baseline(project) -> None:
    cfg = toy_config(project, *DEGRADED)
    result = run_pipeline(cfg, until="evaluate")["evaluate"]
    assert result.baseline["f1_macro"] > result.metrics["f1_macro"]
    assert result.warnings and result.warnings[0].startswith("red flag")
    report = json.loads((cfg.dirs.eval / "metrics.json").read_text())
    assert report["beats_baseline"] is False
    # The baseline won, so register may serve it: evaluate saved it (and only then, below).
    assert (cfg.dirs.eval / BASELINE_DIR / "MLmodel").is_file()


def test_the_baseline_is_saved_only_when_evaluate_keeps_it(project, tmp_path) -> None:
    """Writing the TF-IDF model is most of evaluate on real data; register serves it only
    when it beat the candidate, so evaluate asks (`keep`) before writing it."""
    from tunesmith.objectives import text_classification

    cfg = toy_config(project)
    run_pipeline(cfg, until="clean")
    asked = []
    for keep in (False, True):
        out = tmp_path / f"keep-{keep}"
        out.mkdir()
        scores = text_classification.score_baseline(
            cfg, out, lambda s, keep=keep: asked.append(s["f1_macro"]) or keep)
        assert (out / BASELINE_DIR).exists() == keep
    assert asked == [scores["f1_macro"]] * 2  # asked with the baseline's own scores


def test_beating_the_baseline_follows_the_metric_direction(project) -> None:
    """A lower-is-better primary metric: beating the baseline means a smaller value (the
    gate's own rule, not `>=`)."""
    cfg = toy_config(project, "register.primary_metric=ece")
    run_pipeline(cfg, until="evaluate")
    report = json.loads((cfg.dirs.eval / "metrics.json").read_text())
    assert report["beats_baseline"] == (report["ece"] <= report["baseline"]["ece"])


def test_evaluate_names_what_is_missing(project) -> None:
    cfg = toy_config(project)
    with pytest.raises(DataError, match="test.parquet: not found"):
        evaluate(cfg)
    run_pipeline(cfg, until="validate")
    with pytest.raises(EnvironmentProblem, match="no trained model"):
        evaluate(cfg)
    frame = pd.read_parquet(cfg.dirs.clean / "test.parquet")
    frame.loc[3, "label"] = "meh"
    frame.to_parquet(cfg.dirs.clean / "test.parquet")
    (cfg.dirs.model / "model").mkdir(parents=True)
    (cfg.dirs.model / "model" / "config.json").write_text("{}")
    with pytest.raises(DataError, match="row 3: label 'meh' is not one of"):
        evaluate(cfg)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "sst2").is_dir(), reason="no SST-2 copy on this machine")
def test_baseline_on_sst2_is_a_real_bar() -> None:
    """TF-IDF+LR on SST-2 dev: ~0.80 accuracy is what a fine-tuned model must beat."""
    # The two files differ: train.tsv has CRLF line ends and calls the text `sentence`,
    # dev.tsv has LF and calls it `content`. Both are (label, text) in that order.
    train, dev = (
        pd.read_csv(SHARED_DATA / "sst2" / f"{s}.tsv", sep="\t", quoting=3, header=0,
                    names=["label", "sentence"])
        .assign(sentence=lambda f: f["sentence"].astype(str).str.strip())
        for s in ("train", "dev")
    )
    n = int(os.environ.get("SST2_TRAIN_ROWS", "20000"))
    model = fit_baseline(train["sentence"].astype(str).tolist()[:n], train["label"].to_numpy()[:n])
    proba = baseline_proba(model, dev["sentence"].astype(str).tolist(), 2)
    m = M.classification_metrics(dev["label"].to_numpy(), proba, ["negative", "positive"])
    print(f"sst2 baseline ({n} train rows): accuracy {m['accuracy']:.4f} f1 {m['f1_macro']:.4f}")
    assert 0.75 < m["accuracy"] < 0.9


# ---------------------------------------------------------------------------- causal LM


def test_length_sorted_batches_keep_each_texts_probabilities(tiny_bert: Path) -> None:
    """predict_proba batches texts by length; each row must still be its own text's scores."""
    from tunesmith.objectives.text_classification.scoring import load_classifier, predict_proba

    model, tokenizer = load_classifier(tiny_bert, ["LABEL_0", "LABEL_1"])
    torch.manual_seed(0)  # an untrained head scores every text ~0.5: spread them apart
    torch.nn.init.normal_(model.classifier.weight, std=3.0)
    texts = [t for t, _ in make_rows(23)]
    texts[3] = " ".join(["prize"] * 40)  # the longest text, early in the list
    batched = predict_proba(model, tokenizer, texts, 4, 64)
    one_by_one = np.concatenate([predict_proba(model, tokenizer, [t], 1, 64) for t in texts])
    error = np.abs(batched - one_by_one).max()
    # Rows differ from each other far more than batching changes them: a mix-up would show.
    assert np.abs(one_by_one - one_by_one[::-1]).max() > 100 * max(error, 1e-7)
    assert error < 1e-5
