"""Step `evaluate`: score the trained model, the TF-IDF baseline and the champion on test.

Reads `cfg.dirs.model/model` and `cfg.dirs.clean/{train,test}.parquet`; writes to
`cfg.dirs.eval`: metrics.json (DVC metrics), confusion.csv / roc.csv / pr.csv (DVC plots),
PNGs, misclassified.csv/.md; and logs all of it, plus the earlier steps' context, to the
pipeline's MLflow run.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tunesmith import metrics as M
from tunesmith import plots
from tunesmith.config import Config
from tunesmith.errors import DataError, EnvironmentProblem


@dataclass
class EvaluateResult:
    """Where the report went and the headline numbers."""

    metrics_path: Path
    metrics: dict[str, float]
    baseline: dict[str, float] | None = None
    champion_version: int | None = None
    champion: dict[str, float] | None = None
    warnings: list[str] = field(default_factory=list)
    run_id: str | None = None


def _classification_result(out: Path, report: dict, baseline: dict | None,
                           champion_version: int | None, champion: dict | None,
                           warnings: list[str], run_id: str | None) -> EvaluateResult:
    """The headline numbers of a text or image classification report."""
    return EvaluateResult(
        metrics_path=out / "metrics.json", metrics=M.summary(report),
        baseline=None if baseline is None else M.summary(baseline),
        champion_version=champion_version,
        champion=None if champion is None else M.summary(champion),
        warnings=warnings, run_id=run_id,
    )


def evaluate(cfg: Config) -> EvaluateResult:
    """Run the evaluation of `cfg`'s trained model and write the report (see module doc)."""
    if cfg.task == "causal-lm":
        return evaluate_lm(cfg)
    if cfg.task == "image-classification":
        return evaluate_image(cfg)
    if cfg.task != "text-classification":
        raise EnvironmentProblem(f"evaluate: task {cfg.task!r} is not supported yet")
    from tunesmith import tracking

    out = cfg.dirs.eval
    out.mkdir(parents=True, exist_ok=True)
    test = read_split(cfg, "test")
    y_true = label_ids(cfg, test, "test")
    texts = test["text"].astype(str).tolist()
    model, tokenizer = load_classifier(cfg.dirs.model / "model", cfg.labels)

    proba = predict_proba(model, tokenizer, texts, cfg.evaluate.batch_size, cfg.tokenize.max_length)
    report: dict[str, Any] = M.classification_metrics(y_true, proba, cfg.labels)
    report.update(latency(model, tokenizer, texts, cfg))
    report.update(model_size(cfg.dirs.model / "model", model))
    warnings: list[str] = []

    baseline = None
    if cfg.evaluate.baseline:
        baseline = score_baseline(cfg, texts, y_true)
        report["baseline"] = baseline
        pm = cfg.register_.primary_metric
        report["beats_baseline"] = bool(report.get(pm, 0) >= baseline.get(pm, 0))
        if not report["beats_baseline"]:
            warnings.append(
                f"red flag: fine-tuned {pm} {report[pm]:.4f} is below the TF-IDF+LR "
                f"baseline {baseline[pm]:.4f}"
            )

    with tracking.active_run(cfg, "evaluate") as run_id:
        champion_version, champion = score_champion(cfg, texts, y_true)
        if champion_version is not None:
            report["champion"] = {"version": champion_version, **(champion or {})}
        write_outputs(cfg, out, test, y_true, proba, report)
        tracking.log_context(cfg, run_id)
        log_to_mlflow(cfg, out, report, warnings)
    return _classification_result(out, report, baseline, champion_version, champion, warnings,
                                  run_id)


# ------------------------------------------------------------------------------ inputs


def read_split(cfg: Config, split: str, column: str = "text") -> pd.DataFrame:
    path = cfg.dirs.clean / f"{split}.parquet"
    if not path.is_file():
        raise DataError(f"{path}: not found; run the clean step first")
    frame = pd.read_parquet(path)
    missing = {column, "label"} - set(frame.columns)
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    if frame.empty:
        raise DataError(f"{path}: no rows")
    return frame


def label_ids(cfg: Config, frame: pd.DataFrame, split: str) -> np.ndarray:
    index = {name: i for i, name in enumerate(cfg.labels)}
    ids = frame["label"].astype(str).map(index)
    if ids.isna().any():
        row = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise DataError(
            f"{cfg.dirs.clean / f'{split}.parquet'}: row {row}: label "
            f"{frame['label'].iloc[row]!r} is not one of {cfg.labels}"
        )
    return ids.to_numpy(dtype=int)


def load_classifier(path: Path, labels: list[str]) -> tuple[Any, Any]:
    """The trained model and its tokenizer; checks its labels match the dataset's."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not (path / "config.json").is_file():
        raise EnvironmentProblem(f"{path}: no trained model here; run the train step first")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    names = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
    if names != labels:
        raise EnvironmentProblem(
            f"{path}/config.json: id2label {names} does not match the dataset labels {labels}"
        )
    return model, tokenizer


def predict_proba(
    model: Any, tokenizer: Any, texts: list[str], batch_size: int, max_length: int
) -> np.ndarray:
    """Softmax probabilities, (len(texts), num_labels)."""
    import torch

    # Batches of similar length pad less (a batch pads to its longest text); undone below.
    order = np.argsort([len(t) for t in texts], kind="stable")
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                [texts[i] for i in order[start:start + batch_size]], truncation=True,
                padding=True, max_length=max_length, return_tensors="pt",
            )
            chunks.append(model(**batch).logits.float().softmax(-1).numpy())
    proba = np.empty_like(np.concatenate(chunks))
    proba[order] = np.concatenate(chunks)
    return proba


def latency(model: Any, tokenizer: Any, texts: list[str], cfg: Config) -> dict[str, float]:
    """Milliseconds per example, one at a time and in one batch, over the first N test texts."""
    sample = texts[: cfg.evaluate.latency_examples]
    n, max_len = len(sample), cfg.tokenize.max_length
    predict_proba(model, tokenizer, sample[:2], 2, max_len)  # warm-up: first call allocates
    t0 = time.perf_counter()
    for text in sample:
        predict_proba(model, tokenizer, [text], 1, max_len)
    t1 = time.perf_counter()
    predict_proba(model, tokenizer, sample, max(n, 1), max_len)
    t2 = time.perf_counter()
    return {
        "latency_ms_batch1": 1000 * (t1 - t0) / n,
        "latency_ms_batched": 1000 * (t2 - t1) / n,
        "latency_batch_size": float(n),
    }


def model_size(path: Path, model: Any) -> dict[str, float]:
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {
        "model_size_mb": size / 2**20,
        "n_params": float(sum(p.numel() for p in model.parameters())),
    }


def score_baseline(cfg: Config, texts: list[str], y_true: np.ndarray) -> dict[str, Any]:
    """TF-IDF + logistic regression fit on the train split, scored on `texts`."""
    from tunesmith.baseline import baseline_proba, fit_baseline

    train = read_split(cfg, "train")
    y_train = label_ids(cfg, train, "train")
    if len(set(y_train.tolist())) < 2:
        raise DataError(f"{cfg.dirs.clean / 'train.parquet'}: needs at least two classes")
    model = fit_baseline(train["text"].astype(str).tolist(), y_train, seed=cfg.train.seed)
    proba = baseline_proba(model, texts, len(cfg.labels))
    result = M.classification_metrics(y_true, proba, cfg.labels)
    result.pop("confusion_matrix")
    return result


def score_champion(
    cfg: Config, texts: list[str], y_true: np.ndarray, column: str = "text"
) -> tuple[int | None, dict[str, Any] | None]:
    """Re-score the registered champion on this test set: (version, metrics).

    (None, None) when there is no champion; (version, None) when it could not be loaded,
    which the gate treats as "cannot compare, keep the champion".
    """
    from tunesmith.registry import store

    mv = store.version_for(cfg, store.CHAMPION)
    if mv is None:
        return None, None
    try:
        model = store.load_pyfunc(cfg, store.CHAMPION)
        frame = model.predict(pd.DataFrame({column: texts}))
        proba = frame[[f"prob_{label}" for label in cfg.labels]].to_numpy(dtype=float)
    except Exception as exc:  # noqa: BLE001 - any failure means "not comparable"
        # Logged, not raised: the gate then keeps this champion (see should_promote).
        print(f"evaluate: champion version {mv.version} could not be re-scored: {exc}",
              file=sys.stderr)
        return int(mv.version), None
    result = M.classification_metrics(y_true, proba, cfg.labels)
    result.pop("confusion_matrix")
    return int(mv.version), result


# ----------------------------------------------------------------------------- outputs


def _clean_json(value: Any) -> Any:
    """NaN is not JSON; DVC and MLflow both choke on it."""
    if isinstance(value, dict):
        return {k: _clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_outputs(
    cfg: Config, out: Path, test: pd.DataFrame, y_true: np.ndarray, proba: np.ndarray,
    report: dict[str, Any], column: str = "text",
) -> pd.DataFrame:
    labels = cfg.labels
    y_pred = proba.argmax(1)
    (out / "metrics.json").write_text(json.dumps(_clean_json(report), indent=2), encoding="utf-8")
    pd.DataFrame(
        {"actual": [labels[i] for i in y_true], "predicted": [labels[i] for i in y_pred]}
    ).to_csv(out / "confusion.csv", index=False)
    curves = M.curve_points(y_true, proba, labels)
    roc = pd.DataFrame(curves["roc"], columns=["class", "fpr", "tpr"])
    roc.to_csv(out / "roc.csv", index=False)
    pd.DataFrame(curves["pr"], columns=["class", "recall", "precision"]).to_csv(
        out / "pr.csv", index=False
    )
    plots.confusion_png(report["confusion_matrix"], labels, out / "confusion_matrix.png")
    plots.curves_png(curves["roc"], "fpr", "tpr", "ROC (one-vs-rest)", out / "roc.png")
    plots.curves_png(curves["pr"], "recall", "precision", "precision-recall", out / "pr.png")
    curve = plots.read_curve(cfg.dirs.model / "curve.csv")
    if curve is not None:
        plots.training_curves_png(curve, out / "training_curves.png")
    worst = misclassified(test, y_true, proba, labels, cfg.evaluate.n_misclassified, column)
    worst.to_csv(out / "misclassified.csv", index=False)
    (out / "misclassified.md").write_text(misclassified_markdown(worst), encoding="utf-8")
    return worst


def misclassified(
    test: pd.DataFrame, y_true: np.ndarray, proba: np.ndarray, labels: list[str], n: int,
    column: str = "text",
) -> pd.DataFrame:
    """The `n` wrong predictions the model was most confident about (`column` shown first)."""
    y_pred = proba.argmax(1)
    wrong = np.flatnonzero(y_pred != y_true)
    frame = pd.DataFrame(
        {
            column: test[column].astype(str).to_numpy()[wrong],
            "label": [labels[i] for i in y_true[wrong]],
            "predicted": [labels[i] for i in y_pred[wrong]],
            "confidence": proba[wrong, y_pred[wrong]],
            "p_true": proba[wrong, y_true[wrong]],
        }
    )
    return frame.sort_values("confidence", ascending=False).head(n).reset_index(drop=True)


def misclassified_markdown(frame: pd.DataFrame) -> str:
    lines = ["# Worst misclassified test examples", ""]
    if frame.empty:
        return "\n".join([*lines, "None: every test example was classified correctly.", ""])
    column = str(frame.columns[0])  # "text", or "image" (a path) for image datasets
    lines += [f"| {column} | label | predicted | confidence |", "| --- | --- | --- | --- |"]
    for row in frame.itertuples():
        text = str(row[1]).replace("|", "\\|").replace("\n", " ")[:200]
        lines.append(f"| {text} | {row.label} | {row.predicted} | {row.confidence:.3f} |")
    return "\n".join(lines) + "\n"


def log_to_mlflow(cfg: Config, out: Path, report: dict[str, Any], warnings: list[str]) -> None:
    """Scalar metrics (test, baseline/, champion/, class/), tags and every report file."""
    import mlflow

    values = {f"test/{k}": v for k, v in M.summary(report).items()}
    for prefix in ("baseline", "champion"):
        if isinstance(report.get(prefix), dict):
            values.update({f"{prefix}/{k}": v for k, v in M.summary(report[prefix]).items()})
    for label, stats in report["per_class"].items():
        values.update({f"class/{label}/{k}": float(v) for k, v in stats.items()})
    mlflow.log_metrics({k: v for k, v in values.items() if math.isfinite(v)})
    if "beats_baseline" in report:
        mlflow.set_tag("eval.beats_baseline", str(report["beats_baseline"]).lower())
    if warnings:
        mlflow.set_tag("eval.warnings", "; ".join(warnings)[:5000])
    mlflow.log_artifacts(str(out), "eval")


# --------------------------------------------------------------------------- images


def evaluate_image(cfg: Config) -> EvaluateResult:
    """Images: the same metrics, baseline and champion rules as text, scored on image files
    (decode + the saved image processor, as `predict` does), plus a misclassified grid."""
    from tunesmith import tracking
    from tunesmith.images import baseline as B
    from tunesmith.images.grid import misclassified_grid
    from tunesmith.images.scoring import latency as image_latency
    from tunesmith.images.scoring import load_image_classifier
    from tunesmith.images.scoring import predict_proba as image_proba

    out = cfg.dirs.eval
    out.mkdir(parents=True, exist_ok=True)
    test, train = read_split(cfg, "test", "image"), read_split(cfg, "train", "image")
    y_true = label_ids(cfg, test, "test")
    paths = [cfg.dirs.clean / p for p in test["image"]]
    model, processor = load_image_classifier(cfg.dirs.model / "model", cfg.labels)
    proba = image_proba(model, processor, paths, cfg.evaluate.batch_size)
    report: dict[str, Any] = M.classification_metrics(y_true, proba, cfg.labels)
    report.update(image_latency(model, processor, paths, cfg.evaluate.latency_examples))
    report.update(model_size(cfg.dirs.model / "model", model))
    warnings: list[str] = []
    baseline = None
    if cfg.evaluate.baseline:
        fitted = B.fit_baseline([cfg.dirs.clean / p for p in train["image"]],
                                label_ids(cfg, train, "train"), seed=cfg.train.seed)
        baseline = M.classification_metrics(
            y_true, B.baseline_proba(fitted, paths, len(cfg.labels)), cfg.labels)
        baseline.pop("confusion_matrix")
        report["baseline"] = {"name": B.NAME, **baseline}
        pm = cfg.register_.primary_metric
        report["beats_baseline"] = bool(report.get(pm, 0) >= baseline.get(pm, 0))
        if not report["beats_baseline"]:
            warnings.append(f"red flag: fine-tuned {pm} {report[pm]:.4f} is below the {B.NAME} "
                            f"baseline {baseline[pm]:.4f}")
    with tracking.active_run(cfg, "evaluate") as run_id:
        champion_version, champion = score_champion(cfg, [str(p) for p in paths], y_true, "image")
        if champion_version is not None:
            report["champion"] = {"version": champion_version, **(champion or {})}
        worst = write_outputs(cfg, out, test, y_true, proba, report, column="image")
        misclassified_grid(worst, cfg.dirs.clean, out / "misclassified_grid.png")
        tracking.log_context(cfg, run_id)
        log_to_mlflow(cfg, out, report, warnings)  # the grid goes with eval/ artifacts
    return _classification_result(out, report, baseline, champion_version, champion, warnings,
                                  run_id)


# ------------------------------------------------------------------------- causal LM

N_SAMPLES = 5  # generated examples shown in the report


def evaluate_lm(cfg: Config) -> EvaluateResult:
    """Causal LM: response-token loss and perplexity on test, the champion's on the same
    rows, and a few greedy generations next to the reference responses."""
    from tunesmith import tracking
    from tunesmith.lm_eval import generate_samples, lm_loss, load_lm, samples_markdown
    from tunesmith.registry import store

    out = cfg.dirs.eval
    out.mkdir(parents=True, exist_ok=True)
    path = cfg.dirs.clean / "test.parquet"
    if not path.is_file():
        raise DataError(f"{path}: not found; run the clean step first")
    test = pd.read_parquet(path)
    if missing := {"prompt", "response"} - set(test.columns):
        raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    model, tokenizer = load_lm(cfg.dirs.model / "model")
    template, max_len, batch = (cfg.train.prompt_template, cfg.tokenize.max_length,
                                cfg.evaluate.batch_size)
    report: dict[str, Any] = {"n": len(test),
                              **lm_loss(model, tokenizer, test, template, max_len, batch)}
    report.update(model_size(cfg.dirs.model / "model", model))
    samples = generate_samples(model, tokenizer, test.head(N_SAMPLES), template, max_len)

    with tracking.active_run(cfg, "evaluate") as run_id:
        champion_version = champion = None
        if (mv := store.version_for(cfg, store.CHAMPION)) is not None:
            champion_version = int(mv.version)
            try:
                c_model, c_tok = load_lm(store.model_dir_for(cfg, store.CHAMPION))
                champion = lm_loss(c_model, c_tok, test, template, max_len, batch)
            except Exception as exc:  # noqa: BLE001 - any failure means "not comparable"
                print(f"evaluate: champion version {mv.version} could not be re-scored: {exc}",
                      file=sys.stderr)
            report["champion"] = {"version": champion_version, **(champion or {})}
        (out / "metrics.json").write_text(json.dumps(_clean_json(report), indent=2),
                                          encoding="utf-8")
        samples.to_json(out / "samples.jsonl", orient="records", lines=True, force_ascii=False)
        (out / "samples.md").write_text(samples_markdown(samples), encoding="utf-8")
        curve = plots.read_curve(cfg.dirs.model / "curve.csv")
        if curve is not None:
            plots.training_curves_png(curve, out / "training_curves.png")
        tracking.log_context(cfg, run_id)
        import mlflow

        values = {f"test/{k}": v for k, v in M.summary(report).items()}
        values.update({f"champion/{k}": v for k, v in M.summary(champion or {}).items()})
        mlflow.log_metrics({k: v for k, v in values.items() if math.isfinite(v)})
        mlflow.log_artifacts(str(out), "eval")
    return EvaluateResult(
        metrics_path=out / "metrics.json", metrics=M.summary(report),
        champion_version=champion_version, champion=champion, run_id=run_id,
    )
