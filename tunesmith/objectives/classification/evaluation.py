"""Evaluation shared by the classification task types (text and images).

Both score a test split into class probabilities with their own model code; from there
the report, the DVC plot files, the PNGs, the misclassified examples and the champion's
re-score (through the same MLflow model `predict` serves) are the same code.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tunesmith import metrics as M
from tunesmith import plots
from tunesmith.errors import DataError


def read_split(clean_dir: Path, split: str, column: str) -> pd.DataFrame:
    """A clean split with its `column` and `label`; one line naming the file if not."""
    path = clean_dir / f"{split}.parquet"
    if not path.is_file():
        raise DataError(f"{path}: not found; run the clean step first")
    frame = pd.read_parquet(path)
    missing = {column, "label"} - set(frame.columns)
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    if frame.empty:
        raise DataError(f"{path}: no rows")
    return frame


def label_ids(labels: list[str], frame: pd.DataFrame, path: Path) -> np.ndarray:
    index = {name: i for i, name in enumerate(labels)}
    ids = frame["label"].astype(str).map(index)
    if ids.isna().any():
        row = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise DataError(f"{path}: row {row}: label {frame['label'].iloc[row]!r} is not one of "
                        f"{labels}")
    return ids.to_numpy(dtype=int)


def scored(y_true: np.ndarray, proba: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """The classification metrics without the confusion matrix (baseline, champion), with
    the share of rows predicted as each class (what `collapse` reads)."""
    result = M.classification_metrics(y_true, proba, labels)
    matrix = np.asarray(result.pop("confusion_matrix"))
    result["predicted_share"] = predicted_share(matrix, labels)
    return result


# ------------------------------------------------- the majority class and collapsed models

# A model predicting one class for this share of the test rows (or more) has collapsed.
COLLAPSE_SHARE = 0.99
# ... and so has one whose macro F1 is within this of always predicting the majority class.
COLLAPSE_F1_TOLERANCE = 0.01
MAJORITY = "majority class"


def predicted_share(confusion: Any, labels: list[str]) -> dict[str, float]:
    """{label: share of rows predicted as it} from a confusion matrix (rows: actual)."""
    counts = np.asarray(confusion, dtype=float).sum(axis=0)
    total = counts.sum() or 1.0
    return {label: float(c / total) for label, c in zip(labels, counts, strict=True)}


def majority_baseline(clean_dir: Path, labels: list[str]) -> dict[str, Any]:
    """Always predicting the train split's most frequent class, scored on test like any model:
    the floor a classifier must clear on imbalanced data (accuracy = that class's share)."""
    y = {split: label_ids(labels, pd.read_parquet(clean_dir / f"{split}.parquet",
                                                  columns=["label"]),
                          clean_dir / f"{split}.parquet") for split in ("train", "test")}
    top = int(np.bincount(y["train"], minlength=len(labels)).argmax())
    proba = np.zeros((len(y["test"]), len(labels)))
    proba[:, top] = 1.0
    return {"class": labels[top], **scored(y["test"], proba, labels)}


def collapse(report: dict[str, Any], majority: dict[str, Any]) -> dict[str, Any]:
    """Whether a scored model collapsed: one class for >= COLLAPSE_SHARE of the test rows, or
    macro F1 at the majority-class level. `report` has a confusion matrix or predicted_share."""
    labels = list(report["per_class"])
    shares = report.get("predicted_share") or predicted_share(report["confusion_matrix"], labels)
    top = max(shares, key=shares.get)
    f1, floor = float(report["f1_macro"]), float(majority["f1_macro"])
    one_class = shares[top] >= COLLAPSE_SHARE
    at_floor = f1 <= floor + COLLAPSE_F1_TOLERANCE
    why = []
    if one_class:
        why.append(f"predicts {top!r} for {shares[top]:.1%} of test rows")
    if at_floor:
        why.append(f"macro F1 {f1:.4f} is at the majority-class level {floor:.4f}")
    return {"collapsed": one_class or at_floor, "top_class": top, "top_share": shares[top],
            "f1_macro": f1, "majority_f1_macro": floor, "reason": "; ".join(why)}


def save_baseline(model: Any, out: Path) -> Path:
    """The fitted scikit-learn baseline as an MLflow sklearn model under `out`, so register
    logs exactly what evaluate measured (classification/registering.py)."""
    import mlflow.sklearn
    import sklearn

    from tunesmith.objectives.classification.registering import BASELINE_DIR

    path = out / BASELINE_DIR
    # MLflow's default format (skops: no pickle); explicit requirements skip its inference,
    # which loads the model in a subprocess.
    mlflow.sklearn.save_model(model, str(path),
                              pip_requirements=[f"scikit-learn=={sklearn.__version__}"])
    return path


def model_size(path: Path, model: Any) -> dict[str, float]:
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {"model_size_mb": size / 2**20,
            "n_params": float(sum(p.numel() for p in model.parameters()))}


def champion_proba(cfg: Any, column: str, values: list[str]) -> np.ndarray | None:
    """The registered champion's class probabilities for `values`, through the MLflow
    model `predict` serves; None when it can't be loaded or scored (the gate then keeps
    it: a model we cannot compare never gets replaced)."""
    from tunesmith.registry import store

    try:
        model = store.load_pyfunc(cfg, store.CHAMPION, check_requirements=False)
        frame = model.predict(pd.DataFrame({column: values}))
        return frame[[f"prob_{label}" for label in cfg.labels]].to_numpy(dtype=float)
    except Exception as exc:  # noqa: BLE001 - any failure means "not comparable"
        print(f"evaluate: the champion could not be re-scored: {exc}", file=sys.stderr)
        return None


def clean_json(value: Any) -> Any:
    """NaN is not JSON; DVC and MLflow both choke on it."""
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_outputs(out: Path, test: pd.DataFrame, y_true: np.ndarray, proba: np.ndarray,
                  report: dict[str, Any], labels: list[str], curve_csv: Path, n_worst: int,
                  column: str) -> pd.DataFrame:
    """confusion/roc/pr CSVs (DVC plots), their PNGs, the training curves and the most
    confident mistakes; returns those mistakes."""
    y_pred = proba.argmax(1)
    pd.DataFrame({"actual": [labels[i] for i in y_true],
                  "predicted": [labels[i] for i in y_pred]}).to_csv(out / "confusion.csv",
                                                                    index=False)
    curves = M.curve_points(y_true, proba, labels)
    pd.DataFrame(curves["roc"], columns=["class", "fpr", "tpr"]).to_csv(out / "roc.csv",
                                                                        index=False)
    pd.DataFrame(curves["pr"], columns=["class", "recall", "precision"]).to_csv(
        out / "pr.csv", index=False)
    plots.confusion_png(report["confusion_matrix"], labels, out / "confusion_matrix.png")
    plots.curves_png(curves["roc"], "fpr", "tpr", "ROC (one-vs-rest)", out / "roc.png")
    plots.curves_png(curves["pr"], "recall", "precision", "precision-recall", out / "pr.png")
    if (curve := plots.read_curve(curve_csv)) is not None:
        plots.training_curves_png(curve, out / "training_curves.png")
    worst = misclassified(test, y_true, proba, labels, n_worst, column)
    worst.to_csv(out / "misclassified.csv", index=False)
    (out / "misclassified.md").write_text(misclassified_markdown(worst), encoding="utf-8")
    return worst


def misclassified(test: pd.DataFrame, y_true: np.ndarray, proba: np.ndarray,
                  labels: list[str], n: int, column: str = "text") -> pd.DataFrame:
    """The `n` wrong predictions the model was most confident about (`column` shown first)."""
    y_pred = proba.argmax(1)
    wrong = np.flatnonzero(y_pred != y_true)
    frame = pd.DataFrame({
        column: test[column].astype(str).to_numpy()[wrong],
        "label": [labels[i] for i in y_true[wrong]],
        "predicted": [labels[i] for i in y_pred[wrong]],
        "confidence": proba[wrong, y_pred[wrong]],
        "p_true": proba[wrong, y_true[wrong]],
    })
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


def per_class_metrics(report: dict[str, Any]) -> dict[str, float]:
    """`class/<label>/<metric>` values for MLflow."""
    return {f"class/{label}/{k}": float(v) for label, stats in report.get("per_class", {}).items()
            for k, v in stats.items()}
